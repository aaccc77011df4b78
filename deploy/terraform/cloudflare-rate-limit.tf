# A Cloudflare rate-limiting rule for the ops hostname: the first line of
# defence in front of nginx's limit_req and the agent's own per-IP limits.
#   terraform init && terraform apply -var zone_id=... -var ops_hostname=ops.example.com

terraform {
  required_providers {
    cloudflare = {
      source  = "cloudflare/cloudflare"
      version = "~> 4.40"
    }
  }
}

variable "zone_id" {
  type        = string
  description = "The Cloudflare zone of the ops hostname."
}

variable "ops_hostname" {
  type        = string
  description = "The hostname nginx serves the ops-agent on."
}

variable "requests_per_minute" {
  type    = number
  default = 60
}

resource "cloudflare_ruleset" "vigil_ops_rate_limit" {
  zone_id     = var.zone_id
  name        = "vigil-ops-rate-limit"
  description = "Rate limit the Vigil ops-agent hostname per client IP"
  kind        = "zone"
  phase       = "http_ratelimit"

  rules {
    action      = "block"
    description = "Vigil ops: ${var.requests_per_minute} requests a minute per IP"
    enabled     = true
    expression  = "(http.host eq \"${var.ops_hostname}\")"

    ratelimit {
      characteristics     = ["cf.colo.id", "ip.src"]
      period              = 60
      requests_per_period = var.requests_per_minute
      mitigation_timeout  = 600
    }
  }
}
