"""Iris flowers: 4 measurements → 3 species, a two-layer ReLU MLP."""

from onnxkit import nn
from onnxkit.training_recipe import TrainingRecipe, training_recipes
from onnxkit.zoo import Recipe

SPECIES = ["setosa", "versicolor", "virginica"]


def recipe(hidden: int = 16, seed: int = 0) -> Recipe:
    nn.manual_seed(seed)
    he = "kaiming_uniform"  # this model's init before Linear's default became PyTorch's (its figures)
    mlp = nn.Sequential([nn.Linear(4, hidden, init_fn=he), nn.ReLU(), nn.Linear(hidden, 3, init_fn=he)])
    return Recipe(mlp, {"x": nn.Input(["batch", 4])}, task="classification", labels=SPECIES,
                  metadata=training_recipes(full=TrainingRecipe(lr=0.01, batch_size=16, epochs=100, standardize=False)))
