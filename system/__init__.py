"""activealign's pure library: no Ray, vLLM or DeepSpeed imports anywhere below this package."""
