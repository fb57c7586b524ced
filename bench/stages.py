print("stages: todo")
