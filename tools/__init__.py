"""netcode tools: benchmarks, load tests, traces and plots (installed as netcode_tools)."""
