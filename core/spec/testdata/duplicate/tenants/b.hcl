tenant "bob" {}

tenant "alice" {}
