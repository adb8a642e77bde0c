# Baseline meter entry point (bench/baseline/naive.py), compiled on the board like main.py.
import naive

naive.main()
