import sys
import os

print(os, sys)
l = 1
