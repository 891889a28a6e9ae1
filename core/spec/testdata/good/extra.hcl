# Policy fixture: the spec package only lists it.
