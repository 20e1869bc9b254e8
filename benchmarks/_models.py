"""Models the spectra benchmark analyzes (built here, no downloads)."""
from __future__ import annotations

import torch
from torch import nn


def small_transformer(vocab: int = 30522, d_model: int = 512, heads: int = 8, ff: int = 2048,
                      layers: int = 4, seed: int = 0) -> nn.Module:
    """BERT-small-sized (L=4, H=512, Turc et al. 2019): token embedding, a torch
    TransformerEncoder and an LM head (random weights), 45.9M parameters."""
    torch.manual_seed(seed)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            layer = nn.TransformerEncoderLayer(d_model, heads, ff, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, vocab)

        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens)))

    return LM().eval()


def vgg11(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """VGG11 (configuration A of Simonyan & Zisserman) with the 25088-4096-4096 head."""
    torch.manual_seed(seed)
    cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    feats, c = [], 3
    for v in cfg:
        if v == "M":
            feats.append(nn.MaxPool2d(2))
        else:
            feats += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    model = nn.Sequential(
        nn.Sequential(*feats), nn.AdaptiveAvgPool2d(7), nn.Flatten(),
        nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                      nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                      nn.Linear(4096, num_classes)))
    return model.eval()
