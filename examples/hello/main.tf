# An offline example: only Terraform's built-in provider, so it runs with no network.
terraform {
  required_version = ">= 1.5"
}

variable "greeting" {
  type    = string
  default = "hello from iac-runner"
}

variable "sleep_seconds" {
  type        = number
  default     = 1
  description = "How long the provisioner works; raise it to try cancellation."
}

resource "terraform_data" "greeting" {
  input = var.greeting

  provisioner "local-exec" {
    command = "echo 'provisioning: ${self.input}'; sleep ${var.sleep_seconds}; echo 'provisioned'"
  }
}

output "greeting" {
  value = terraform_data.greeting.output
}
