"""Small networks for the dense-evaluation tests: every cell of their score maps must
equal the classifier on its crop. Each stresses something different; all but PADDED
are unpadded."""

# a 37x37 crop whose pool drops the crop's last row and column (33 -> 16): each cell's
# field is 36x36, so the network computes cells whose field fits the image but whose
# 37x37 crop would not
FLOOR_SPEC = """
name: floor
input: {shape: [1, 37, 37]}
layers:
  - {name: conv1, op: conv, out_channels: 3, kernel_size: 5}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: fc1, op: fc, out_features: 4}
"""

STRIDED = """
name: strided
input: {name: data, shape: [2, 19, 23]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: [3, 5], stride: 2}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 3, stride: 2}
  - {name: fc1, op: fc, out_features: 6}
  - {name: r2, op: relu}
  - {name: fc2, op: fc, out_features: 3}
"""

GROUPED_LRN = """
name: grouped_lrn
input: {name: data, shape: [4, 16, 14]}
layers:
  - {name: c1, op: conv, out_channels: 8, kernel_size: 3, groups: 2}
  - {name: n1, op: lrn, size: 3, alpha: 0.01, beta: 0.75, k: 1.0}
  - {name: p1, op: avgpool, kernel_size: 2}
  - {name: c2, op: conv, out_channels: 8, kernel_size: [2, 3], groups: 4, stride: [1, 2]}
  - {name: r2, op: relu}
  - {name: p2, op: maxpool, kernel_size: [3, 2], stride: [2, 1]}
  - {name: fc1, op: fc, out_features: 5}
  - {name: prob, op: softmax}
"""

DAG = """
name: dag
input: {name: data, shape: [3, 18, 18]}
layers:
  - {name: stem, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
  - {name: a, op: conv, out_channels: 4, kernel_size: 1, inputs: [stem]}
  - {name: b, op: conv, out_channels: 4, kernel_size: 5, inputs: [stem]}
  - {name: b_pool, op: maxpool, kernel_size: 3, stride: 1, inputs: [stem]}
  - {name: b_proj, op: conv, out_channels: 4, kernel_size: 3}
  - {name: sum, op: add, inputs: [b, b_proj]}
  - {name: a_crop, op: maxpool, kernel_size: 5, stride: 1, inputs: [a]}
  - {name: cat, op: concat, inputs: [a_crop, sum]}
  - {name: pool, op: maxpool, kernel_size: 2}
  - {name: fc1, op: fc, out_features: 7}
  - {name: drop, op: dropout}
  - {name: fc2, op: fc, out_features: 4}
"""

# not a sliding network: a squeeze-and-excitation block, where the crop's average,
# through two 1x1 convs and a sigmoid, multiplies the map it was pooled from
GATED = """
name: gated
input: {shape: [3, 12, 12]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
  - {name: squeeze, op: globalavgpool}
  - {name: reduce, op: conv, out_channels: 2, kernel_size: 1}
  - {name: expand, op: conv, out_channels: 6, kernel_size: 1}
  - {name: gate, op: sigmoid}
  - {name: excite, op: mul, inputs: [c1, gate]}
  - {name: head, op: globalavgpool}
  - {name: fc, op: fc, out_features: 3}
"""

# not a sliding network either: a groupnorm normalises its whole map, and nothing after it
# (no fc, no global pool) gives the converting passes a reason to refuse it
GROUP_NORMED = """
name: grouped
input: {shape: [3, 12, 12]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: gn, op: groupnorm, groups: 2}
  - {name: c2, op: conv, out_channels: 3, kernel_size: 5}
"""

UNPADDED = {"strided": STRIDED, "grouped_lrn": GROUPED_LRN, "dag": DAG}

# an unpadded conv takes one pixel off before a stride-2 branch that is enlarged back:
# the branches meet on odd sides alone (they were taken to meet on even ones, so every
# tile of an even side failed)
UNPADDED_BEFORE_UPSAMPLE = """
name: unpadded
input: {shape: [2, 21, 21]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 2}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: u3, op: upsample, factor: 2}
  - {name: a4, op: add, inputs: [c1, u3]}
  - {name: c5, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""

# padded convs and pools, a ceil-mode pool, uneven dilation: tiles whose largest box differs
# from the --tile that planned them
PADDED = """
name: padded
input: {name: data, shape: [3, 30, 26]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 5, stride: 2, padding: 2}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 3, stride: 2, padding: 1, ceil_mode: true}
  - {name: c2, op: conv, out_channels: 8, kernel_size: 3, padding: [1, 2], dilation: [1, 2]}
  - {name: a1, op: avgpool, kernel_size: 2, count_include_pad: false, padding: 1}
  - {name: fc1, op: fc, out_features: 5}
"""
