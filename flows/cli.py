"""Command-line interface (`avatarize ...`)."""

import typer

app = typer.Typer(no_args_is_help=True, help="Turn a video of a person into an animatable clothed 3D avatar.")


@app.command()
def version() -> None:
    """Print the avatarize version."""
    from importlib.metadata import version as _v

    typer.echo(_v("avatarize"))


if __name__ == "__main__":
    app()
