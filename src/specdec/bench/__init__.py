"""The measurement side: workloads, runners, peers, reports, plots, theory, memory, doctor."""
