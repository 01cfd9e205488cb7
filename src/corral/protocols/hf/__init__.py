"""The Hugging Face Inference API's task shapes (what ``huggingface_hub.InferenceClient`` posts to
one model URL and parses back), free of any transport."""
