"""Training the models rag ships (the reader, the answer policy); scripts only, never imported at run time."""
