"""The Hugging Face policy kinds: a model saved with save_pretrained, its tokenizer and prompt format,
its CTranslate2 export through CTranslate2's TransformersConverter, and `rest import`."""
