"""The page scripts of the Streamlit app (``app.py`` lists them in ``st.navigation``)."""
