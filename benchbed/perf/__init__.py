"""Speed: ``benchbed bench`` measures training and inference throughput of a model with every site kind,
next to a plain reference loop and a conv-only limit. Imports the training and model layers."""
