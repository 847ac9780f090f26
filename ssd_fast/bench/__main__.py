from ..eval.bench import main

main()
