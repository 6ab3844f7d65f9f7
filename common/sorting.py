"""Where a returned item goes: to its article type where the model is certain enough of it, else to the
category above it that is certain (subcategory, then master category), else to a person.

A shoe whose exact type is in doubt is often certainly footwear: the summed probability of the classes
under one subcategory (or master category) clears that level's threshold. Training chooses every
threshold on held-out photos and ships them in model.json (`sorting`); the nightly job applies them to
the probabilities TorchServe answers with. One definition for both, so the precision training measures
is the precision the desk gets.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

# Deepest first; a `--route-levels` setting names the shallowest level items may be sorted to.
LEVELS = ("article", "sub", "master")
# How many of a class's ancestors (top first: master, sub) name its group at each upper level.
DEPTH = {"sub": 2, "master": 1}


@dataclass(frozen=True)
class Sorted:
    """An item sorted without a person: the level, the category path it goes to, its probability."""

    level: str
    path: tuple[str, ...]
    probability: float


@dataclass(frozen=True)
class LevelThresholds:
    """The probability a group needs to be sorted to: its own, or the level's for groups too rare to have one."""

    default: float
    groups: dict[tuple[str, ...], float] = field(default_factory=dict)

    def of(self, group: tuple[str, ...]) -> float:
        return self.groups.get(group, self.default)

    def to_dict(self) -> dict:
        return {
            "default": self.default,
            "groups": [{"path": list(path), "threshold": value} for path, value in sorted(self.groups.items())],
        }

    @classmethod
    def from_dict(cls, values: dict) -> LevelThresholds:
        return cls(
            float(values["default"]), {tuple(group["path"]): float(group["threshold"]) for group in values["groups"]}
        )


@dataclass(frozen=True)
class SortingRule:
    """Thresholds per level (article thresholds are per predicted class) and the class tree that groups
    classes into subcategories and master categories (class -> its ancestors, top first)."""

    levels: dict[str, LevelThresholds]
    tree: dict[str, list[str]] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """The article level's threshold for classes without their own (the single threshold of old)."""
        return self.levels["article"].default

    def class_threshold(self, category: str) -> float:
        return self.levels["article"].of((category,))

    def group(self, category: str, level: str) -> tuple[str, ...]:
        """The class's path at `level`; () where the tree does not reach that deep."""
        if level == "article":
            return (category,)
        ancestors = self.tree.get(category, [])
        return tuple(ancestors[: DEPTH[level]]) if len(ancestors) >= DEPTH[level] else ()

    def group_probabilities(self, probabilities: dict[str, float], level: str) -> dict[tuple[str, ...], float]:
        sums: dict[tuple[str, ...], float] = defaultdict(float)
        for category, probability in probabilities.items():
            group = self.group(category, level)
            if group:
                sums[group] += probability
        return sums

    def decide(
        self, probabilities: dict[str, float], route_levels: str = "article", article_threshold: float | None = None
    ) -> Sorted | None:
        """Where an item with these class probabilities goes; None: to a person.

        `route_levels` names the shallowest level allowed ("article": article types only). `article_threshold`
        replaces the article thresholds (an operator's override); the upper levels keep theirs."""
        for level in LEVELS[: LEVELS.index(route_levels) + 1]:
            likeliest = self.likeliest(probabilities, level) if level in self.levels else None
            if likeliest is None:
                continue
            threshold = self.levels[level].of(likeliest.path)
            if level == "article" and article_threshold is not None:
                threshold = article_threshold
            if likeliest.probability >= threshold:
                return likeliest
        return None

    def likeliest(self, probabilities: dict[str, float], level: str) -> Sorted | None:
        """The path at `level` with the highest (summed) probability, whatever its threshold; None where the
        tree does not reach that level."""
        if level == "article":
            sums = {(category,): probability for category, probability in probabilities.items()}
        else:
            sums = self.group_probabilities(probabilities, level)
        if not sums:
            return None
        best = max(sums, key=sums.__getitem__)
        return Sorted(level, best, sums[best])

    def likeliest_group(self, probabilities: dict[str, float]) -> Sorted | None:
        """The upper-level group with the highest summed probability, at the deepest level the tree names
        (the subcategory, else the master category), whatever its threshold: where an item left to a person
        most likely belongs. None where the rule has no tree."""
        return next(filter(None, (self.likeliest(probabilities, level) for level in LEVELS[1:])), None)

    def to_dict(self) -> dict:
        return {"levels": {level: value.to_dict() for level, value in self.levels.items()}, "tree": self.tree}

    @classmethod
    def from_dict(cls, values: dict) -> SortingRule:
        return cls(
            {level: LevelThresholds.from_dict(value) for level, value in values["levels"].items()},
            {category: list(ancestors) for category, ancestors in values.get("tree", {}).items()},
        )

    @classmethod
    def single(cls, threshold: float) -> SortingRule:
        """One threshold for every class and no upper levels: what models without `sorting` ship."""
        return cls({"article": LevelThresholds(threshold)})


def rule_of(model_info: dict) -> SortingRule:
    """The rule a model ships (model.json, or the handler's description of it); models trained before
    rules existed ship one review threshold."""
    if model_info.get("sorting"):
        return SortingRule.from_dict(model_info["sorting"])
    return SortingRule.single(float(model_info["review_threshold"]))
