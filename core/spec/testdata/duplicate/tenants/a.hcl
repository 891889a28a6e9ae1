tenant "alice" {}
