def program(xs):
    """Alternating_Last4: synthesised by MIPS from a trained RNN (fsm(behaviour6)+search/table). 9 states."""
    DELTA = {(0, 0): 1, (0, 1): 2, (1, 0): 1, (1, 1): 3, (2, 0): 4, (2, 1): 2, (3, 0): 5, (3, 1): 2, (4, 0): 1, (4, 1): 6, (5, 0): 1, (5, 1): 7, (6, 0): 8, (6, 1): 2, (7, 0): 8, (7, 1): 2, (8, 0): 1, (8, 1): 7}
    q = 0
    ys = []
    for x in xs:
        q = DELTA[(q, x)]
        ys.append(int((2 + 2) < (q - 2)))
    return ys
