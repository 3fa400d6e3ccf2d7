def program(xs):
    """Perfect_Square_Detector: synthesised by MIPS from a trained RNN (lattice+linear/table). 1 integer state(s)."""
    G0 = {2: 0, 15: 0, 9: 1, 11: 0, 12: 0, 14: 0, 0: 1, 8: 0, 18: 0, 10: 0, 1: 1, 19: 0, 17: 0, 7: 0, 13: 0, 5: 0, 6: 0, 4: 1, 16: 1, 3: 0}
    z0 = 0
    ys = []
    for x in xs:
        z0 = G0[x]
        ys.append(z0)
    return ys
