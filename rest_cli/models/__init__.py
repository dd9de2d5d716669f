"""The PyTorch Transformer, its SentencePiece tokenizer and the CTranslate2 export."""
