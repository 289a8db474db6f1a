"""dask_broker benchmarks: ``python -m benchmarks [--quick|--full]``.

Every scenario measures dask_broker and its baselines in the same run, on the
same data, and reports medians, throughput and ratios -- never pass/fail.
"""
