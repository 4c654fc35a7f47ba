"""All learning math, as plain functions on arrays: the single source of truth every engine uses.

- :mod:`~neuroplastic.rules.clapp`: dense CLAPP and CLAPP-s (one layer's loss and its Hebbian gradient), initial weights;
- :mod:`~neuroplastic.rules.retinotopic`: locally connected layers without weight sharing (their wiring; the rule of
  :mod:`~neuroplastic.rules.clapp` with one score per location);
- :mod:`~neuroplastic.rules.conv`, :mod:`~neuroplastic.rules.conv_clapp`, :mod:`~neuroplastic.rules.architectures`: conv/pool primitives (im2col), conv CLAPP
  per location or per patch, the named conv encoders;
- :mod:`~neuroplastic.rules.hinge`: the contrastive L1 hinge loss of two views (Tang, Yang & Amit 2022);
  :mod:`~neuroplastic.rules.hinge_methods`, :mod:`~neuroplastic.rules.hinge_dense`, :mod:`~neuroplastic.rules.hinge_conv`: how its gradient reaches the
  layers (end-to-end BP or FA, layer-wise through heads with BP, RF or URF feedback, DTP).

:data:`RULES` names every rule a protocol may choose (``[rule] name``). This package imports
nothing else of neuroplastic, so engines, tests and benchmarks all check the same math.
"""
from dataclasses import dataclass

from .clapp import (ClappGrads, LayerForward, clapp_pairs, clapp_sequences, forward, init_dense_params, relu,
                    relu_prime, retro_distance, stack_rates)
from .conv_clapp import ConvClappGrads, conv_clapp_layer, conv_forward, grid_scores

__all__ = ["RULES", "SETTINGS", "SHIFT_KEYS", "Rule", "ClappGrads", "ConvClappGrads", "LayerForward", "clapp_pairs",
           "clapp_sequences", "conv_clapp_layer", "conv_forward", "forward", "grid_scores", "init_dense_params", "relu",
           "relu_prime", "retro_distance", "stack_rates"]


@dataclass(frozen=True)
class Rule:
    """What distinguishes the rules of one family, as the engines need it.

    ``retro``: a separate retrodiction matrix ``W_retro`` (CLAPP) instead of
    ``W_pred^T`` (CLAPP-s). ``pairing``: ``"contrastive"`` evaluates a positive
    and ``[rule] negatives`` negative pairs at every step (CLAPP-s);
    ``"stochastic"`` makes each step *either* a fixation or a saccade, with
    probability ``[stimulus] saccade_prob`` (CLAPP).

    ``family``: ``"clapp"`` (glimpse sequences, the rules above) or ``"views"``
    (two augmented views of whole images, the contrastive hinge rules of Tang et
    al. 2022, :mod:`~neuroplastic.rules.hinge_methods`). For ``"views"``, ``process``
    says which layers learn at a step (``"e2e"`` all, ``"gll"`` one after the
    other, ``"rll"`` one at random, ``"dtp"`` all from propagated targets) and
    ``feedback`` how the error reaches a layer (``"bp"``, ``"fa"``, ``"rf"``, ``"urf"``).
    """

    name: str
    retro: bool
    pairing: str
    doc: str
    family: str = "clapp"
    process: str = ""
    feedback: str = ""
    #: The protocol keys this rule reads beyond ``[rule] name``, ``lr`` and ``optimizer`` (see :data:`SETTINGS`).
    keys: tuple[str, ...] = ()


#: Every protocol key a rule may read, as ``table.key -> declaration``: type (``kind``), ``default``,
#: allowed values (``choices`` or bounds ``low``/``high``) and ``doc``. The protocol schema is built
#: from these (neuroplastic.protocol), so a key no chosen rule reads is refused there.
SETTINGS: dict[str, dict] = {
    "rule.negatives": dict(kind="int", default=1, low=1, doc="Negative pairs per positive pair. CLAPP-s: saccades; "
                           "hinge rules: the next k images of the batch (>= batch_size - 1: every other image)."),
    "rule.offsets": dict(kind="int_list", default=[1], low=1, doc="Conv CLAPP: a patch predicts the patches these "
                         "many rows below it, one W_pred each (paper: [2, 3, 4, 5, 6])."),
    "rule.score": dict(kind="str", default="location", choices=("location", "patch"), doc="Conv CLAPP: score, hinge "
                       "and modulation per location of the map (the paper's text) or of each patch's spatial mean "
                       "(the authors' code)."),
    "rule.sampling": dict(kind="str", default="rolled", choices=("rolled", "authors"), doc="Conv CLAPP: how "
                          "negatives are drawn. 'rolled': pair sets, each pairing the context of every image with "
                          "the same position of another image of the batch (one B x B score matrix serves them "
                          "all). 'authors': as the authors' code, per layer: CLAPP-s, each negative a uniformly "
                          "random patch of the predicted rows (any column, any image, its own included); CLAPP, "
                          "one random image per image and offset (its own included) at every position, and one "
                          "positive-or-negative coin per image; its retrodiction (mirror) pathway draws its own."),
    "stimulus.onoff": dict(kind="bool", default=False, doc="Dense CLAPP glimpses: each value x becomes two inputs, "
                           "ON [x]+ and OFF [-x]+ (half-wave rectification, as retinal ON and OFF cells or "
                           "auditory-nerve fibres), so that signed glimpses (sound) reach a spiking network as spike "
                           "rates; the rate variant reads the same 2 n inputs."),
    "stimulus.saccade_prob": dict(kind="float", default=0.5, low=0, high=1, doc="CLAPP: probability that a step is "
                                  "a saccade (y = -1) rather than a fixation (y = +1)."),
    "stimulus.crop": dict(kind="int", default=0, low=0, doc="Conv CLAPP: crop each image to crop x crop pixels "
                          "before cutting its patch grid, at a random place per training batch and at the centre "
                          "for the probe (paper: 64; 0 = whole image). Views: each view starts as a crop x crop "
                          "window at a random place, the probe reads the centre window (the authors' STL-10: 64)."),
    "model.pred_init_scale": dict(kind="float", default=0.1, low=0, doc="Prediction (and retrodiction) weights "
                                  "start as N(0, pred_init_scale^2 / n)."),
    "model.init": dict(kind="str", default="he", choices=("he", "torch"), doc="Conv CLAPP and the hinge rules: how "
                       "the weights start. 'he': He-normal kernels and layers (init_scale); conv CLAPP's prediction "
                       "weights N(0, pred_init_scale^2 / C), the hinge rules' heads N(0, 1 / fan_in). 'torch': "
                       "PyTorch's defaults, as the authors' layers start: every kernel, weight, head, feedback "
                       "weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (conv: fan_in = 9 C_in; conv CLAPP's "
                       "W_pred and W_retro: C); init_scale and pred_init_scale keep their defaults."),
    "model.bias": dict(kind="bool", default=False, doc="Conv CLAPP: every conv layer has a bias per output channel "
                       "(as the authors' layers), learned by the layer's own loss; it starts at zero with "
                       "init = 'he', drawn as PyTorch does with init = 'torch'."),
    "rule.tau": dict(kind="float", default=2.0, low=0, low_open=True, doc="Hinge rules: L1 distance that separates "
                     "positive from negative pairs."),
    "rule.delta": dict(kind="float", default=1.0, low=0, doc="Hinge rules: margin; positives are pulled below "
                       "tau - delta, negatives pushed above tau + delta."),
    "rule.head": dict(kind="int", default=64, low=1, doc="Hinge rules: size of the linear head(s) whose outputs "
                      "the loss compares."),
    "rule.negative_weight": dict(kind="float", default=0.0, low=0, doc="Hinge rules: weight of each negative pair "
                                 "against a positive; 0: 1/negatives, so that an image's negatives weigh as much as "
                                 "its positive (the authors' future = 5 weighs each of its 4 negatives 0.2)."),
    "rule.head_input": dict(kind="str", default="mean", choices=("mean", "flatten", "pool2"), doc="Hinge rules on "
                            "conv encoders: what a head reads of its layer's maps: their spatial mean (C inputs), "
                            "the flattened map (the authors' CONV6) or the flattened 2 x 2 average pool of it "
                            "(their VGG6). Dense encoders: 'mean'."),
    "rule.target_step": dict(kind="float", default=0.05, low=0, low_open=True, doc="DTP: top target "
                             "h_L - target_step * d(loss of the image)/dh_L."),
    "rule.inverse_noise": dict(kind="float", default=0.1, low=0, low_open=True, doc="DTP: standard deviation of "
                               "the noise the inverses learn to undo."),
    "rule.inverse_lr": dict(kind="float", default=1e-3, low=0, low_open=True, doc="DTP: learning rate of the "
                            "inverses."),
    "stimulus.augment": dict(kind="str", default="shift", choices=("shift", "affine", "simclr"), doc="Views: the "
                             "augmentation pipeline. 'shift': shift (crop_pad), mirror (flip), brightness and contrast "
                             "jitter (jitter), blur (blur); 'affine': the authors' random affine deformation "
                             "(deform_data, their CIFAR views), with saturation and hue jitter and a mirror; "
                             "'simclr': the authors' STL-10 views, random resized crop to the view's side, mirror, "
                             "colour jitter (p 0.8), grey (p 0.2). The last two carry the authors' fixed "
                             "parameters: crop_pad, flip, jitter and blur belong to 'shift'."),
    "stimulus.crop_pad": dict(kind="int", default=1, low=0, doc="Views: shift each view by up to this many pixels "
                              "(pad with 0, crop back)."),
    "stimulus.flip": dict(kind="bool", default=False, doc="Views: mirror views left-right at random; conv CLAPP: "
                          "mirror each training image (p = 1/2) before its patch grid is cut, as the authors do "
                          "(off for digits: a mirrored digit is another symbol)."),
    "stimulus.mean": dict(kind="float", default=0.0, doc="Conv CLAPP: the encoder sees (x - mean) / std, training "
                          "and probe alike (the authors' STL-10 grey: 0.412)."),
    "stimulus.std": dict(kind="float", default=1.0, low=0, low_open=True, doc="Conv CLAPP: see stimulus.mean "
                         "(the authors' STL-10 grey: 0.257)."),
    "stimulus.jitter": dict(kind="float", default=0.4, low=0, high=1, doc="Views: scale brightness and contrast "
                            "by factors from [1 - jitter, 1 + jitter]."),
    "stimulus.blur": dict(kind="float", default=0.0, low=0, doc="Views: Gaussian blur with a standard deviation "
                          "from [0, blur] pixels."),
    "model.activation": dict(kind="str", default="relu", choices=("relu", "hardtanh", "tanh"), doc="Non-linearity "
                             "of the hinge rules' layers (the authors use hardtanh); CLAPP's rate neuron is relu."),
}

#: Keys of the CLAPP rules on conv encoders (``[model] arch`` other than "dense").
_CONV = ("rule.offsets", "rule.score", "rule.sampling", "stimulus.crop", "stimulus.flip", "stimulus.mean", "stimulus.std",
         "model.init", "model.bias")
#: Keys of every hinge rule.
_VIEWS = ("rule.negatives", "rule.negative_weight", "rule.tau", "rule.delta", "rule.head", "rule.head_input",
          "model.init", "model.activation", "stimulus.crop", "stimulus.augment", "stimulus.crop_pad", "stimulus.flip",
          "stimulus.jitter", "stimulus.blur")
#: The keys of ``[stimulus] augment = "shift"`` alone (the other pipelines carry the authors' fixed parameters).
SHIFT_KEYS = ("stimulus.crop_pad", "stimulus.flip", "stimulus.jitter", "stimulus.blur")


#: Every rule a protocol may name (``[rule] name``), by name.
RULES = {
    "clapp_s": Rule("clapp_s", retro=False, pairing="contrastive",
                    doc="CLAPP-s: W_pred^T retrodiction, positive + k negatives per step (= gradient descent).",
                    keys=("rule.negatives", "model.pred_init_scale", "stimulus.onoff", *_CONV)),
    "clapp": Rule("clapp", retro=True, pairing="stochastic",
                  doc="CLAPP: independent learned W_retro with its own score and gate, one fixation or one "
                      "saccade per step.",
                  keys=("stimulus.saccade_prob", "model.pred_init_scale", "stimulus.onoff", *_CONV)),
}


def _hinge(process: str, feedback: str, doc: str) -> Rule:
    name = f"hinge_{process}" + (f"_{feedback}" if process in ("e2e", "gll") else "")
    dtp = ("rule.target_step", "rule.inverse_noise", "rule.inverse_lr") if process == "dtp" else ()
    return Rule(name, retro=False, pairing="views", doc=doc, family="views", process=process, feedback=feedback,
                keys=_VIEWS + dtp)


# Tang, Yang & Amit (2022): the L1 contrastive hinge loss of two views (rules/hinge.py), reaching the layers
# in the ways the paper compares. One name per method, so that a protocol, a run directory and a results
# table say which method ran, and no key means nothing for some rules.
RULES.update((r.name, r) for r in (
    _hinge("e2e", "bp", "Hinge loss on one head on top, end-to-end backpropagation."),
    _hinge("e2e", "fa", "Hinge loss on one head on top, feedback alignment (fixed random feedback matrices)."),
    _hinge("gll", "bp", "Greedy layer-wise: each layer in turn learns from its own head by BP, then is frozen."),
    _hinge("gll", "rf", "Greedy layer-wise, error from the head through a fixed random matrix (RF)."),
    _hinge("gll", "urf", "Greedy layer-wise, error through a random matrix updated like the head (URF)."),
    _hinge("rll", "bp", "Random layer-wise: one random layer learns from its own head (BP) per batch."),
    _hinge("dtp", "", "Difference target propagation from the top head, learned inverses on noisy inputs."),
))
