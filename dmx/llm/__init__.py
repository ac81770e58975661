"""The LLM side of dMX: Hugging Face causal LMs (loading, the embedded model), rotations, data,
perplexity and zero-shot evaluation, the KL and random baselines, sweeps, plots and export. Built on
the dMX core (:mod:`dmx`); the core never imports it."""
