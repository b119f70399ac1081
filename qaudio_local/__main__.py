"""``python -m qaudio_local``: the same as the ``qaudio`` command."""

from qaudio_local.cli import main

if __name__ == "__main__":
    main(prog_name="qaudio")
