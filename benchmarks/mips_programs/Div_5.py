def program(xs):
    """Div_5: synthesised by MIPS from a trained RNN (fsm(behaviour3)+search/table). 10 states."""
    DELTA = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3, (2, 0): 4, (2, 1): 5, (3, 0): 6, (3, 1): 7, (4, 0): 8, (4, 1): 9, (5, 0): 0, (5, 1): 1, (6, 0): 2, (6, 1): 3, (7, 0): 4, (7, 1): 5, (8, 0): 6, (8, 1): 7, (9, 0): 8, (9, 1): 9}
    q = 0
    ys = []
    for x in xs:
        q = DELTA[(q, x)]
        ys.append(int(2 < (q - 2)))
    return ys
