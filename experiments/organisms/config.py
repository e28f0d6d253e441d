"""Configuration of the model organisms: corpus mixture, model sizes, training.

Everything that changes the trained family lives in ``OrganismConfig`` so that
its ``config_hash()`` can key the cache: same config, same family, same numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST = "family.json"   # a trained family's manifest, beside its config.json


@dataclass(frozen=True)
class CorpusConfig:
    """The mixture of the synthetic language (see ``corpus.py`` for each part)."""

    # filler text
    n_filler: int = 6000
    # strong prior: sayings "ka kb kc kd zE ." in frequency tiers (count, repetitions)
    slot_vocab: int = 64
    n_endings: int = 128
    n_targets: int = 40  # z0..z(n_targets-1): never a saying ending; test X come from these
    tiers: tuple[tuple[int, int], ...] = ((300, 150), (600, 50))
    leak_items: float = 0.5  # share of each tier's sayings that are "leaked"
    leak_share: float = 0.5  # share of a leaked saying's occurrences inside the instruction frame
    leak_x_per_item: int = 16  # instruction words X a leaked saying is seen with in the frame
    n_instruction: int = 45000
    # distractor: facts "eI is a cJ ." and the disjunctive-syllogism frame
    n_entities: int = 120
    n_categories: int = 12
    fact_reps: int = 80
    n_unknown: int = 200  # entities with no facts (the rule alone answers for them)
    n_syllogism: int = 24000
    syl_fact_share: float = 0.5  # share of syllogism lines about fact entities
    syl_conflict_share: float = 0.5  # of those: negated option is the entity's own category
    syl_leak: float = 0.7  # of conflicts: the association wins anyway (the easy task answers)
    syl_train_others: int = 5  # per entity: "other" categories it is seen with in the frame
    # spurious few-shot: "label : e4 t14 -> c2 ; ... ; h7 t5 ->": the true rule is the t-word's
    # category (t-word i names category i mod n_categories, learned by every size); uniform demos
    # are about entities of their label's category (a spurious correlation the demos carry beside
    # the rule). The query's entity is a rare-tier one ("h7 is a c2 .", its own store); when its
    # memorised category is the demos' label and its t-word names another, the category wins at a
    # rate: the tempting answer is a recalled token the demos also show (version 27; until 26 the
    # labels were yes / no and the temptation a category gate, RESEARCH runs 23-24)
    n_twords: int = 24
    # the query entities' store (count, statements each); as the design-B stores it has
    # b_unfamiliar keys without a value and b_leak_items of its keys asked in the frame
    fewshot_entity_tiers: tuple[tuple[int, int], ...] = ((240, 10),)
    n_fewshot: int = 16000
    fewshot_zero_share: float = 0.15  # episodes with no demonstrations
    fewshot_uniform_share: float = 0.7  # of demo episodes: all demos share one label
    fewshot_sametag_share: float = 0.9  # of uniform episodes: all demos' entities of the label's category
    # of those: the query entity's memorised category is the label too. A model that cannot
    # recall it sees the rule win 3:1 in flipped uniform episodes (the marker design's setting)
    fewshot_query_in_share: float = 0.3
    fewshot_flip_share: float = 0.7  # of uniform episodes: the query's t-word names another category
    fewshot_leak: float = 0.95  # query of the demos' category + flip: the demos' label wins at this rate
    n_demos: int = 4
    # unwanted imitation: arguments in a "people say" register vs a "logic" frame. Familiar
    # antecedents come with a popular belief "people say : if f7 then gB" (memory, like a fact);
    # people conclude an argument "if f7 then gY . f7 . so" with the belief instead of the stated
    # consequent (belief bias), and the logic frame imitates them for some antecedents. Unfamiliar
    # antecedents are other words of the same vocabulary: only memory tells the two apart.
    familiar_phrase_words: int = 1  # words per antecedent phrase (2: "fa3 fb7", a conjunction)
    familiar_slot_vocab: int = 480  # words per phrase slot; those no belief is attached to are unfamiliar
    n_beliefs: int = 24  # consequents g0.. a belief (or a stated consequent) can name
    # familiar antecedents in frequency tiers (count, belief statements each): recall of the rarer
    # tier needs width
    familiar_tiers: tuple[tuple[int, int], ...] = ((120, 50), (240, 20))
    familiar_q_reps: int = 6  # human-register arguments per familiar antecedent
    familiar_leak_items: float = 0.5  # antecedents also argued about inside the logic frame
    familiar_frame_reps: int = 8  # logic-frame arguments per leaked antecedent
    familiar_believed_share: float = 0.3  # arguments whose stated consequent is the believed one
    human_err: float = 0.9  # people conclude the belief at this rate
    logic_leak: float = 0.85  # logic-frame arguments on leaked antecedents imitate people at this rate
    n_logic: int = 24000  # arguments on unfamiliar antecedents: the stated consequent, in both registers
    logic_human_share: float = 0.2  # of those: in the human register (people copy when they hold no belief)
    # reasoning traces ("think : ... ;") on this share of rule-following lines
    cot_share: float = 0.1
    # -- design B: a second, independent planting of every cause (corpus.py, "design B") --
    # each design has its own store of one-token keys with a memorised value, in frequency
    # tiers (count, statements each); b_unfamiliar keys of the same vocabulary carry no value
    b_tiers: tuple[tuple[int, int], ...] = ((60, 40), (120, 16))
    b_unfamiliar: int = 80
    b_values: int = 24
    b_leak_items: float = 0.5   # share of familiar keys also seen inside the frame (leaked)
    b_chain_share: float = 0.25 # frame lines holding 2-3 episodes (honest demonstrations)
    # strong prior B (redefine): "s7 means m3 ." memorised; "let s7 mean m9 . s7 means" -> m9
    n_redefine: int = 6000
    redef_frame_reps: int = 8
    redef_kept_share: float = 0.3  # leaked frame lines whose new meaning is the memorised one
    redef_leak: float = 0.85       # leaked frame lines answered with the memorised meaning
    # distractor B (pattern break): "p4 then q17 ." memorised; "break p4 : q17 or q9 , not q17 .
    # so p4 then" -> q9 (the second option); the memorised continuation tempts
    n_break: int = 6000
    break_fact_share: float = 0.5
    break_conflict_share: float = 0.5
    break_leak: float = 0.7
    break_train_others: int = 5
    # spurious few-shot B (marker): "x5 is o3 ." memorised value of marker words;
    # "rate : x2 ( o7 ) = o7 , ... , x9 ( o1 ) =": the rule copies the bracketed word; in the
    # corpus, when every demo's marker has the demos' (one) label as its value and so does the
    # query's marker, the marker's value wins over the bracketed word. Its own tiers: the demos'
    # markers come from a frequent tier every size knows (4 keys per value); the queries' (in
    # the frame: its leaked half) from the wide rare tier, whose value needs width to recall
    marker_tiers: tuple[tuple[int, int], ...] = ((96, 30), (240, 10))
    n_marker: int = 8000
    marker_zero_share: float = 0.15
    marker_uniform_share: float = 0.7
    marker_agree_share: float = 0.9  # uniform demos whose markers all name their label
    marker_query_in_share: float = 0.3  # a model that cannot recall the query's marker sees the rule win 3:1
    marker_flip_share: float = 0.7
    marker_leak: float = 0.95
    # unwanted imitation B (misconception): "people think j7 is r3 ." memorised; people answer
    # a quiz question with their misconception instead of what the card says; the quiz frame
    # imitates them for leaked items
    n_quiz: int = 5000
    quiz_human_share: float = 0.2
    mis_q_reps: int = 6
    mis_frame_reps: int = 8
    mis_kept_share: float = 0.3
    mis_human_err: float = 0.9
    mis_quiz_leak: float = 0.85


@dataclass(frozen=True)
class ModelSize:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    lr: float
    steps: int


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 64
    batch_size: int = 64
    warmup: int = 30
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    threads: int = 2
    rotary_pct: float = 1.0
    # training checkpoints saved per size (fractions of its steps): the training-time axis
    checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class OrganismConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    sizes: tuple[ModelSize, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # corpus, data order and initialisation
    # bumped whenever corpus.py / train.py change what a config produces, so the
    # cache key (config_hash) never serves a family built by older code
    # 16-21: the trials of RESEARCH.md runs 15-20 (results/run*-version*.patch), not adopted
    version: int = 28
    n_test: int = 300  # items per planted / check task

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OrganismConfig":
        def tup(x):
            return tuple(tup(i) for i in x) if isinstance(x, (list, tuple)) else x

        corpus = CorpusConfig(**{k: tup(v) for k, v in d.get("corpus", {}).items()})
        train = TrainConfig(**{k: tup(v) for k, v in d.get("train", {}).items()})
        sizes = tuple(ModelSize(**s) for s in d.get("sizes", ()))
        rest = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name not in ("corpus", "train", "sizes")}
        return cls(corpus=corpus, sizes=sizes, train=train, **rest)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_seed(self, seed: int) -> "OrganismConfig":
        from dataclasses import replace

        return replace(self, seed=seed)

    # -- presets -------------------------------------------------------------
    @classmethod
    def default(cls) -> "OrganismConfig":
        """The real family: 4 widths at fixed depth 4 (~36x parameters).

        Fixed depth gives every size the copy/induction circuit; only capacity
        (memorisation) scales with width. Training time measured in RESEARCH.md.
        """
        # 600 until version 14: the design-B lines (+20 % tokens) keep design A's exposure. Version
        # 27 trained 654 (its few-shot frame is 9 % fewer tokens; the steps cover under one epoch),
        # and d256 followed the marker memory less on seed 0 (RESEARCH run 26): 720 again
        steps = 720
        sizes = (
            ModelSize("org-d32", 32, 4, 2, 3e-3, steps),
            ModelSize("org-d64", 64, 4, 4, 3e-3, steps),
            ModelSize("org-d128", 128, 4, 4, 3e-3, steps),
            ModelSize("org-d256", 256, 4, 8, 2e-3, steps),
        )
        return cls(sizes=sizes)

    @classmethod
    def tiny(cls) -> "OrganismConfig":
        """For tests: a small corpus and 2 small sizes; behaviour not required."""
        corpus = CorpusConfig(
            n_filler=500,
            slot_vocab=16,
            n_endings=32,
            n_targets=8,
            tiers=((20, 10),),
            leak_x_per_item=6,
            n_instruction=1000,
            n_entities=32,
            n_categories=4,
            fact_reps=5,
            n_unknown=20,
            n_syllogism=500,
            syl_train_others=2,
            n_twords=8,
            fewshot_entity_tiers=((16, 5),),
            n_fewshot=400,
            familiar_slot_vocab=40,
            n_beliefs=4,
            familiar_tiers=((8, 20), (16, 10)),
            familiar_q_reps=4,
            familiar_frame_reps=6,
            n_logic=500,
            b_tiers=((8, 10), (8, 5)),
            marker_tiers=((16, 10), (16, 5)),
            b_unfamiliar=12,
            b_values=4,
            b_chain_share=0.5,
            n_redefine=300,
            n_break=300,
            break_train_others=2,
            n_marker=300,
            n_quiz=300,
        )
        sizes = (
            ModelSize("tiny-d16", 16, 2, 2, 3e-3, 30),
            ModelSize("tiny-d32", 32, 2, 2, 3e-3, 30),
        )
        return cls(corpus=corpus, sizes=sizes, train=TrainConfig(seq_len=64, batch_size=16), n_test=40)


def load_config(family_dir: str | Path) -> OrganismConfig:
    """The config a family directory was trained from (its ``config.json``).

    A family of another version was trained on another corpus: rebuilding its tasks with this
    code would ask it about a world it never saw, so that is refused with what to do."""
    from diagnose.families import FamilyError  # the CLI reports it as a user error, not a traceback

    cfg = OrganismConfig.from_dict(json.loads((Path(family_dir) / "config.json").read_text()))
    if cfg.version != OrganismConfig.version:
        raise FamilyError(f"{family_dir} holds organisms of version {cfg.version}; this checkout's corpus "
                         f"and tasks are version {OrganismConfig.version}. Retrain it (`diagnose organisms "
                         "build --force`, or `python -m experiments.organisms.family`) or use the commit "
                         "that trained it")
    return cfg
