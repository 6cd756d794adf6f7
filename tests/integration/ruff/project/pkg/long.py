MESSAGE = "this line is longer than the project's one hundred characters, so E501 reports it here......"
