# Not a policy: the spec package skips hidden files.
