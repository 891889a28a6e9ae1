go test fuzz v1
[]byte("foo = \"bar\"\n")