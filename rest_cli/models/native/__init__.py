"""The native policy kind: rest's own encoder-decoder Transformer, its SentencePiece tokenizer and
its CTranslate2 converter."""
