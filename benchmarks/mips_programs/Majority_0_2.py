def program(xs):
    """Majority_0_2: synthesised by MIPS from a trained RNN (lattice+linear/search/tree). 2 integer state(s)."""
    z0 = 0
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = -x + z0 + 1, z1 + ((x % 2) - (x // 2))
        ys.append(((2 if z0 < (z0 - z1) else 1) if z0 < z1 else (2 if z0 < 0 else 0)))
    return ys
