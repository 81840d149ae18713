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

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = var.repositories
  repository = aws_ecr_repository.this[each.key].name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Untagged images expire after ${each.value.untagged_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = each.value.untagged_days
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest ${each.value.keep_images} images (rollback depth)"
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
