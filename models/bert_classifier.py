"""A BERT-style encoder classifier (word/position/type embeddings, post-norm GELU layers, mean pooling, head).

Its defaults are all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads), so
those pretrained weights fit it.
"""

from onnxkit import nn
from onnxkit.zoo import Recipe


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, max_positions, type_vocab_size, dim, eps, dropout):
        self.word = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_positions, dim)
        self.token_type = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids, token_type_ids):
        seq = nn.ops.shape_of(input_ids, 1, 2)
        pos = nn.ops.slice(self.position.weight, [0], seq, [0], out_shape=[input_ids.shape[1], None])
        x = self.word(input_ids) + pos + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class BertClassifier(nn.Module):
    def __init__(self, vocab_size, max_positions, type_vocab_size, dim, heads, ff_dim, num_layers,
                 num_classes, eps, dropout):
        self.embeddings = BertEmbeddings(vocab_size, max_positions, type_vocab_size, dim, eps, dropout)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, "gelu", norm_first=False, eps=eps)
            for _ in range(num_layers)
        )
        self.pool = nn.MeanPool()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes, init_fn="xavier_uniform")

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder:
            x = layer(x, attention_mask)
        return self.classifier(self.dropout(self.pool(x, attention_mask)))


def recipe(vocab_size: int = 30522, max_positions: int = 512, type_vocab_size: int = 2,
           hidden: int = 384, heads: int = 12, ff_dim: int = 1536, num_layers: int = 6,
           num_classes: int = 2, eps: float = 1e-12, dropout: float = 0.1, seed: int = 0) -> Recipe:
    nn.manual_seed(seed)
    model = BertClassifier(vocab_size, max_positions, type_vocab_size, hidden, heads, ff_dim,
                           num_layers, num_classes, eps, dropout)
    ids = nn.Input(["batch", "seq"], "int64")
    return Recipe(model, {"input_ids": ids, "attention_mask": ids, "token_type_ids": ids},
                  labels=[str(i) for i in range(num_classes)])
