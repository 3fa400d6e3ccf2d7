def program(xs):
    """Div_3: synthesised by MIPS from a trained RNN (fsm(behaviour3)+search/table). 6 states."""
    DELTA = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3, (2, 0): 4, (2, 1): 5, (3, 0): 0, (3, 1): 1, (4, 0): 2, (4, 1): 3, (5, 0): 4, (5, 1): 5}
    q = 0
    ys = []
    for x in xs:
        q = DELTA[(q, x)]
        ys.append(int(2 < q))
    return ys
