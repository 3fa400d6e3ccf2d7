def program(xs):
    """Majority_0_1: synthesised by MIPS from a trained RNN (lattice+linear/search). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x in xs:
        z0 = 2*x + z0 - 1
        ys.append(int(0 < z0))
    return ys
