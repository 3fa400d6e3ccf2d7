def program(xs):
    """Binary_Addition: synthesised by MIPS from a trained RNN (fsm(behaviour3)+search/table). 4 states."""
    DELTA = {(0, 0, 0): 1, (0, 0, 1): 0, (0, 1, 0): 0, (0, 1, 1): 2, (1, 0, 0): 1, (1, 0, 1): 0, (1, 1, 0): 0, (1, 1, 1): 2, (2, 0, 0): 0, (2, 0, 1): 2, (2, 1, 0): 2, (2, 1, 1): 3, (3, 0, 0): 0, (3, 0, 1): 2, (3, 1, 0): 2, (3, 1, 1): 3}
    q = 0
    ys = []
    for x0, x1 in xs:
        q = DELTA[(q, x0, x1)]
        ys.append(abs(((q - 1) // 2)))
    return ys
