"""The Improve step's training: options (no torch), objectives, data, the trainer, the run folder,
torchrun."""
