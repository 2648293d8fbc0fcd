"""The iac-runner control plane: API, persistence, queue, dispatch, logs and Terraform state."""
