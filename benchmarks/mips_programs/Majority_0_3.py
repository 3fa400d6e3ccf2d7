def program(xs):
    """Majority_0_3: synthesised by MIPS from a trained RNN (lattice+search/tree). 3 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    ys = []
    for x in xs:
        z0, z1, z2 = z0 + ((2 - x) // 2), z1 + min(x, (2 - x)), z2 + ((x % 3) - min(1, x))
        ys.append((((3 if z0 < (z0 - z2) else 2) if z1 < z2 else (3 if z0 < (z0 - z1) else 1)) if z0 < z1 else ((3 if z0 < (z0 - z2) else 2) if z0 < z2 else (3 if z0 < 0 else 0))))
    return ys
