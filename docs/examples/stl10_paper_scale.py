"""
Load STL-10 from disk for a paper-scale run
===========================================

*This page is not executed when the documentation is built: it needs the STL-10 files and, at
paper size, a GPU-sized budget.*

Illing et al. (2021) train CLAPP on STL-10's 100 000 unlabeled images, grey-scale, cropped to
64 x 64 and cut into a 7 x 7 grid of 16 x 16 patches at stride 8, with a VGG-6 encoder whose every
conv layer is its own CLAPP layer; each layer is then probed on the labelled ``train`` split
(5 000 images) and tested on ``test`` (8 000). neuroplastic reads the data set in its published
binary format, batch by batch, so memory stays flat (one pass over ``unlabeled`` at batch 32
peaks at about 35 MiB).

The expected layout
-------------------
Download and unpack ``stl10_binary.tar.gz`` from the data set's authors. ``[data] path`` is the
``stl10_binary`` directory or its parent::

    stl10_binary/
        class_names.txt        10 class names, one per line
        train_X.bin            5 000 images, 3 x 96 x 96 uint8 each (27 648 bytes)
        train_y.bin            5 000 labels, one uint8 1..10 each
        test_X.bin             8 000 images
        test_y.bin             8 000 labels
        unlabeled_X.bin        100 000 images (2.76 GB), no labels

Each record holds the three colour planes one after the other, each written column by column
(MATLAB order); the loader turns them into grey 96 x 96 images in [0, 1]. A missing or malformed
file stops the run with one message naming the file and what was expected.

The commands
------------
Check the files and the protocol without training (``validate`` reads the protocol; ``list`` shows
the data sources with their splits and labels)::

    neuroplastic list
    neuroplastic validate protocols/clapp_stl10_paper.toml --set data.path='"/data/stl10_binary"'

Train at paper size (CLAPP, VGG-6, Adam lr 2e-4, batch 32, 600 epochs; CLAPP-s is
``protocols/clapp_s_stl10_paper.toml``), and continue after an interruption::

    neuroplastic run protocols/clapp_stl10_paper.toml --set data.path='"/data/stl10_binary"'
    neuroplastic run protocols/clapp_stl10_paper.toml --set data.path='"/data/stl10_binary"' --resume

The paper-size numpy run is slow on a CPU (the authors' own code takes about 13 hours per epoch on
2 cores): run it where a GPU is available.

The Tang et al. methods have paper-scale protocols too (``protocols/tang_<method>_stl10_paper.toml``),
and a sweep runs several seeds at once (:ref:`sphx_glr_auto_examples_plot_sweep.py`).
"""

# %%
# From Python
# -----------
# The loader is :func:`neuroplastic.data.load`; the images of the large ``unlabeled`` split are read
# from the file only when indexed.
from neuroplastic import data

unlabeled = data.load("stl10", path="/data/stl10_binary", split="unlabeled")
print(len(unlabeled), unlabeled.samples.shape)        # 100000 (100000, 96, 96)
first = unlabeled.samples[:32]                        # one batch, read from disk now

train = data.load("stl10", path="/data/stl10_binary", split="train")
print(train.classes)                                  # ('airplane', 'bird', ...)
