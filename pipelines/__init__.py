"""Ray Data stages, training and fine-tuning jobs, and the DAG that runs them."""
