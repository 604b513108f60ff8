"""Small images: blocks of conv 3×3 (ReLU) and max-pool 2 → flatten → dense(`hidden`, ReLU) → dense(classes).
`channels_last`: the model takes [batch, height, width, channels] images (Keras' layout) and transposes them."""

from onnxkit import nn
from onnxkit.errors import OnnxkitError
from onnxkit.zoo import Recipe

MAX_FILTERS = 128


def pooled_blocks(height: int, width: int) -> int:
    """The conv blocks whose 2× pools bring the larger side below 8 (8×8: one, 28×28: two, 224×224: five), while
    the smaller side keeps 2 pixels at least."""
    blocks = 0
    while max(height, width) >> blocks > 7 and min(height, width) >> (blocks + 1) >= 2:
        blocks += 1
    return max(blocks, 1) if min(height, width) >= 2 else 0


class ImageCNN(nn.Module):
    def __init__(self, channels: int, height: int, width: int, num_classes: int, filters: int, blocks: int,
                 hidden: int, channels_last: bool = False):
        self.channels_last = channels_last
        widths = [channels, *(min(filters << k, MAX_FILTERS) for k in range(blocks))]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding="same") for i, o in zip(widths, widths[1:],
                                                                                       strict=False))
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1] * (height >> blocks) * (width >> blocks), hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, image):
        x = nn.ops.transpose(image, [0, 3, 1, 2]) if self.channels_last else image
        for conv in self.convs:
            x = self.pool(nn.ops.relu(conv(x)))
        return self.head(nn.ops.relu(self.fc(self.flatten(x))))


def recipe(channels: int = 1, height: int = 8, width: int = 8, num_classes: int = 10, filters: int = 32,
           blocks: int = -1, hidden: int = 64, channels_last: bool = False, seed: int = 0) -> Recipe:
    """`blocks` -1: as many as bring the larger side below 8 (`pooled_blocks`); each doubles `filters`, to 128 at
    most. What `onnxkit train IMAGES` builds when given no model, sized to the images and their classes."""
    blocks = pooled_blocks(height, width) if blocks == -1 else blocks
    if blocks < 0 or min(height, width) >> blocks < 1:
        raise OnnxkitError(f"blocks={blocks}: {height}x{width} images take from 0 to {pooled_blocks(height, width)} "
                           "pooling blocks (-1: that many)")
    nn.manual_seed(seed)
    model = ImageCNN(channels, height, width, num_classes, filters, blocks, hidden, channels_last)
    shape = [height, width, channels] if channels_last else [channels, height, width]
    return Recipe(model, {"image": nn.Input(["batch", *shape])}, task="classification")
