"""Training: the one training loop (`loop`), the layer-wise controls it applies (`freezing`), the PEFT
method table (`methods`), bottleneck adapters (`adapters`), continual learning (`continual`) and model
folders: build a classifier, save and load fine-tuned models (`models`)."""
