"""llama.cpp (GGUF) through llama-cpp-python: the handler, the batched decoder, the samplers."""
