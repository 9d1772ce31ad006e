"""Sparse Transformer attention as a library: patterns -> layouts -> backends.

`patterns` defines strided and fixed attention as predicates over (query, key); `layouts` turns a
pattern into the block tables of `pallas_kernels.block_layout`; `backends` runs one of `dense` (the
reference), `xla_blocksparse` or `pallas` (the kernels in the top-level `pallas_kernels` package, which
never see a pattern nor a mesh; `pallas_backend` places them on the mesh).
"""
