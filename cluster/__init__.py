"""Running the pipeline on Ray clusters: job submission (``jobs``), local heads and the fake
autoscaling cluster used to prove scale-up/down (``local``), and storage settings (``storage``).
The AWS autoscaler config is ``ray_cluster.yaml`` at the repository root."""
