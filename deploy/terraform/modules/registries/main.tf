# ECR repositories: tags are immutable (a tag, the git SHA, always names the same
# digest, so what was tested is what runs), every push is scanned, images are encrypted
# with a customer key, and a lifecycle policy bounds what is kept.
module "key" {
  source         = "../kms-key"
  alias          = "${var.name}-ecr"
  description    = "${var.name}: ECR images"
  aws_account_id = var.aws_account_id
  tags           = merge(var.tags, { Name = "${var.name}-ecr" })
}

moved {
  from = aws_kms_key.ecr
  to   = module.key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.ecr
  to   = module.key.aws_kms_alias.this
}

locals {
  # What one release may add to the count if ECR counts every manifest: the tagged image
  # index, its image and attestation manifests, and the signature referrer. ECR is
  # reported to count at least the index and the signature (docs/terraform.md).
  manifests_per_release = 4
}

resource "aws_ecr_repository" "this" {
  for_each             = var.repositories
  name                 = each.key
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.key.arn
  }

  tags = merge(var.tags, { Name = each.key })
}

# One rule: keep the newest keep_images manifests, whatever their tags. No rule expires
# untagged manifests by age, because here every untagged manifest belongs to a tagged
# image: the children of buildx's image index (the image and its SBOM/provenance
# attestation manifests) and cosign 3's signature, an OCI 1.1 referrer whose subject is
# the image digest. An age rule would delete a signature days after signing while its
# image stays: main.yml could no longer promote the digest, nor `cosign verify` a
# production image. They go with their image instead: AWS documents that a lifecycle
# expiry of a subject deletes its referrers, and a field report saw untagged children of
# a tagged index kept. Orphans (a push that failed between the children and the index)
# are counted like any manifest: this rule removes them once keep_images newer ones exist.
# docs/terraform.md "ECR lifecycle" has the sources, and what is not verified on AWS.
resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = var.repositories
  repository = aws_ecr_repository.this[each.key].name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Keep the newest ${each.value.keep_images} manifests: ${floor(each.value.keep_images / local.manifests_per_release)} releases of up to ${local.manifests_per_release}"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = each.value.keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}
