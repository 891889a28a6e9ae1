tenant "bob" {}
