"""The `metadata_props` keys onnxkit writes into .onnx files, in one place.

Importless, so the runtime (numpy + onnxruntime only) can use it. Values that are
not strings are stored as JSON (see `onnxkit.metadata`). The spellings are the
on-disk format: models already written carry them, so never rename one.
"""

VERSION_KEY = "onnxkit.version"
"""The onnxkit version that built the model (`nn.build`)."""

RECIPE_KEY = "onnxkit.recipe"
"""JSON {"name", "options"}: the zoo recipe the model was built from, and its keyword options."""

PRETRAINED_KEY = "onnxkit.pretrained"
"""The name of the pretrained checkpoint whose weights the model was built with (e.g. "all-MiniLM-L6-v2")."""

TASK_KEY = "onnxkit.task"
"""What the model predicts: "classification", "binary", "regression" or "embedding"."""

LABELS_KEY = "onnxkit.labels"
"""JSON list of class names, the i-th naming class id i."""

SCORES_KEY = "onnxkit.scores"
""""probabilities" when the scores output is already Softmax / Sigmoid of the logits (absent: logits)."""

OUTPUT_KEY = "onnxkit.output"
"""The output training fit, when not the first: it holds the scores that eval and predict read."""

COLUMNS_KEY = "onnxkit.columns"
"""JSON list of the feature columns of the CSV the model trained on, by header name, in the order it read them."""

IMPUTED_KEY = "onnxkit.imputed"
"""JSON list of the inputs whose NaN the model fills itself (with its training medians: `train.impute`)."""

IMPUTE_PREFIX = "onnxkit.impute"
"""The names of the imputation's nodes and median tensors begin with it: `onnxkit.impute.x.median`."""

TRAINING_KEY = "onnxkit.training"
"""JSON summary of the fit that made the model: its data (name or path, seed, sha256), settings, epochs, scores."""

TRAINING_RECIPE_KEY = "onnxkit.training_recipe"
"""JSON {mode: TrainingRecipe}: a recipe's default training settings per mode ("full", "head", "lora")."""

DROPOUT_KEY = "onnxkit.dropout"
"""JSON {Dropout node name: ratio}: the ratio each Dropout node drops at while training."""

BUFFERS_KEY = "onnxkit.buffers"
"""JSON list of the initializers that are Buffers (never trained)."""

TOKENIZER_KEY = "onnxkit.tokenizer"
"""The Hugging Face tokenizers JSON (tokenizer.json) that turns text into the model's token ids."""

MAX_LENGTH_KEY = "onnxkit.max_length"
"""The most tokens one text is encoded to (truncated beyond)."""

PADDING_KEY = "onnxkit.padding"
"""'max_length': texts are padded to MAX_LENGTH_KEY's length, as a recurrent model trained on them was (see
`training_form.needs_full_length`); without it, each batch is padded to its longest text."""

LORA_KEY = "onnxkit.lora"
"""JSON {"rank", "scale", "weights"}: the LoRA adapters in the graph; merging them drops it."""

QUANTIZATION_KEY = "onnxkit.quantization"
"""JSON {"mode", ...}: the settings the model was quantized with, those that apply to its mode."""

PADDING_ROW_KEY = "onnxkit.padding_idx"
"""On a Gather node, not the model: the table row its lookups send no gradient, as PyTorch's
nn.Embedding(padding_idx=...) (written by the DSL's Embedding, and from a dynamo export's record of it)."""

STANDARDIZE_PREFIX = "onnxkit.standardize"
"""Not a key: the prefix of the names training gives the nodes and constants that standardise a model's
inputs and un-scale its output inside the graph (`train.standardize`; fp16 keeps them float32)."""
