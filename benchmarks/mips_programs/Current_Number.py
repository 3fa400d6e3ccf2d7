def program(xs):
    """Current_Number: synthesised by MIPS from a trained RNN (lattice+linear). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x in xs:
        z0 = x
        ys.append(z0)
    return ys
