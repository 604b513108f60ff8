from onnxkit.cli import main

main()
