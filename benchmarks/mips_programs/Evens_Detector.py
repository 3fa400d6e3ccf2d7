def program(xs):
    """Evens_Detector: synthesised by MIPS from a trained RNN (lattice+search). 1 integer state(s)."""
    z0 = 1
    ys = []
    for x in xs:
        z0 = ((1 - x) + (1 ^ x))
        ys.append((z0 // 2))
    return ys
